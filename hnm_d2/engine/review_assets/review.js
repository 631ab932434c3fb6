// The review page of the images hnm_d2 mined: cards, verdicts on images and on their
// detections, sorting, the zoom, export and load. Its data (the images, their detections, the
// verdicts mining obeys already) is the JSON that hnm_d2/engine/review_page.py inlines in
// #review-data.
"use strict";

(function () {
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const $ = (id) => document.getElementById(id);
  const LABELS = { negative: "Clean", object: "Object", unsure: "Unsure" };
  const MEANINGS = {
    negative: "a clean negative: it stays a training negative",
    object: "holds an object: it leaves training and goes to to_annotate.json",
    unsure: "unsure: left out of training until judged",
  };
  const KEYS = { 1: "negative", 2: "object", 3: "unsure" };
  // A detection's verdict: a click on its label cycles through them, in this order.
  const DETECTION_LABELS = { false_alarm: "False alarm", object: "Object" };
  const DETECTION_GLYPHS = { false_alarm: "\u2715 ", object: "\u2713 " };
  const DETECTION_KEYS = { f: "false_alarm", o: "object" };
  const CYCLE = [undefined, "false_alarm", "object"];

  // file_name -> the image verdict a person gave. "object" is also implied by a detection
  // judged object (verdictOf), without being stored here.
  const verdicts = new Map(Object.entries(data.verdicts));
  // file_name -> Map(box key -> "false_alarm" | "object"); coincident detections share a key.
  const boxVerdicts = new Map();
  const entries = data.images.map((image) => ({ image, card: null }));
  const byKey = new Map(entries.map((entry) => [entry.image.key, entry]));
  // Detection verdicts mining obeys on images this page does not show: exported as they came.
  const elsewhere = new Map();
  Object.entries(data.detection_verdicts).forEach(([key, judged]) => {
    if (byKey.has(key)) setBoxVerdicts(byKey.get(key), judged);
    else elsewhere.set(key, judged);
  });
  let exported = snapshot(); // the verdicts as last exported (or as mining obeys them)
  let order = entries; // the cards in the sort order
  let focused = null;
  let selected = 0; // the focused image's detection that the keys F and O judge
  let zoomed = null;
  let toastTimer = null;

  // ------------------------------------------------------------------------- building

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function minedIn(image) {
    return `${image.kind} ${image.number}`;
  }

  // HNM.MINING.SELECTION "random" (the control) orders its draw by score as well.
  function rankMeaning(image) {
    return image.drawn_at_random ? "by score in a random draw" : "hardest";
  }

  function percent(value) {
    return `${(100 * value).toFixed(3)}%`;
  }

  // ``index`` 0: the image's highest-scored detection (the detections come best first). Its
  // label is the button that judges it.
  function boxElement(detection, [width, height], index) {
    const [x0, y0, x1, y1] = detection.box;
    const box = el("div", index === 0 ? "box best" : "box");
    box.dataset.index = index;
    box.style.left = percent(x0 / width);
    box.style.top = percent(y0 / height);
    box.style.width = percent((x1 - x0) / width);
    box.style.height = percent((y1 - y0) / height);
    if (y0 / height < 0.1) box.classList.add("low"); // no room above it: label inside
    const chip = el("button", "chip");
    chip.type = "button";
    chip.dataset.detection = index;
    box.append(chip);
    return box;
  }

  function detectionText(detection, digits) {
    const label = data.show_classes ? `${detection.label} ` : "";
    return label + detection.score.toFixed(digits);
  }

  // The picture with its detections; ``large``: the original file (the thumbnail if it is gone).
  function shotElement(image, large) {
    const shot = el("div", "shot");
    if (image.size) shot.style.aspectRatio = `${image.size[0]} / ${image.size[1]}`;
    if (image.thumb) {
      const img = el("img");
      img.alt = image.name;
      img.decoding = "async";
      if (large) {
        img.addEventListener("error", () => (img.src = image.thumb), { once: true });
        img.src = image.original;
      } else {
        img.loading = "lazy";
        img.src = image.thumb;
      }
      shot.append(img);
    } else {
      shot.append(el("div", "missing", "image file not found"));
    }
    if (image.size) {
      image.detections.forEach((d, index) => shot.append(boxElement(d, image.size, index)));
    }
    return shot;
  }

  function verdictButtons() {
    const group = el("div", "verdicts");
    group.setAttribute("role", "group");
    Object.entries(KEYS).forEach(([key, verdict]) => {
      const button = el("button");
      button.type = "button";
      button.dataset.verdict = verdict;
      button.title = `${MEANINGS[verdict]} (key ${key})`;
      button.append(el("kbd", null, key), LABELS[verdict]);
      group.append(button);
    });
    return group;
  }

  function cardElement(image) {
    const card = el("article", "card");
    card.dataset.key = image.key;
    card.tabIndex = -1;
    const name = el("div", "name", image.name);
    name.title = image.key;
    const score = el("span", "score", image.score.toFixed(3));
    score.title = "highest detection score";
    const meta = el("div", "meta");
    meta.append(el("span", "tag", minedIn(image)), el("span", null, `#${image.rank}`), score);
    const info = el("div", "info");
    info.append(name, meta);
    card.append(shotElement(image, false), info, verdictButtons());
    return card;
  }

  // ------------------------------------------------------------------- verdicts and counts

  function snapshot() {
    const boxes = [...boxVerdicts].map(([key, judged]) => [key, [...judged].sort()]);
    return JSON.stringify([[...verdicts].sort(), boxes.sort()]);
  }

  function boxKey(detection) {
    return detection.box.join(",");
  }

  function sameBox(a, b) {
    return a.every((value, i) => Math.abs(value - b[i]) <= data.box_tolerance);
  }

  function judgedBoxes(image) {
    return boxVerdicts.get(image.key) || new Map();
  }

  function boxVerdict(image, detection) {
    return judgedBoxes(image).get(boxKey(detection));
  }

  function holdsObject(image) {
    return [...judgedBoxes(image).values()].includes("object");
  }

  // The image verdict mining obeys: the person's, or "object" where a detection is one.
  function verdictOf(image) {
    return verdicts.get(image.key) || (holdsObject(image) ? "object" : undefined);
  }

  // Every detection judged a false alarm, the image not judged: a clean negative, perhaps.
  function allFalseAlarms(image) {
    const { detections } = image;
    return detections.length > 0 && detections.every((d) => boxVerdict(image, d) === "false_alarm");
  }

  function paintButtons(group, image) {
    const verdict = verdictOf(image);
    const implied = verdict === "object" && !verdicts.has(image.key);
    const suggest = !verdict && allFalseAlarms(image);
    group.querySelectorAll("button").forEach((b) => {
      const chosen = b.dataset.verdict === verdict;
      b.classList.toggle("chosen", chosen);
      b.classList.toggle("implied", chosen && implied);
      b.classList.toggle("suggested", suggest && b.dataset.verdict === "negative");
      b.setAttribute("aria-pressed", String(chosen));
    });
    const object = group.querySelector('[data-verdict="object"]');
    object.title = implied
      ? "holds an object: a detection is judged one (click to say so for the image itself)"
      : `${MEANINGS.object} (key 2)`;
    const clean = group.querySelector('[data-verdict="negative"]');
    clean.title = suggest
      ? "every detection is judged a false alarm: is the image a clean negative? (key 1)"
      : `${MEANINGS.negative} (key 1)`;
  }

  function paintBoxes(shot, entry) {
    const { image } = entry;
    shot.querySelectorAll(".box").forEach((box) => {
      const detection = image.detections[box.dataset.index];
      const verdict = boxVerdict(image, detection) || "";
      box.dataset.verdict = verdict;
      box.classList.toggle("selected", focused === entry && selected === Number(box.dataset.index));
      const chip = box.firstChild;
      chip.textContent = (DETECTION_GLYPHS[verdict] || "") + detectionText(detection, 2);
      const now = verdict ? DETECTION_LABELS[verdict].toLowerCase() : "not judged";
      chip.title = `score ${detection.score.toFixed(3)}: ${now} (click: false alarm, object, none)`;
    });
  }

  function paintDetectionList(entry) {
    const { image } = entry;
    $("zoom-detections")
      .querySelectorAll("li")
      .forEach((row) => {
        const index = Number(row.dataset.index);
        const verdict = boxVerdict(image, image.detections[index]);
        row.dataset.verdict = verdict || "";
        row.classList.toggle("selected", focused === entry && selected === index);
        row.querySelectorAll("button").forEach((b) => {
          b.classList.toggle("chosen", b.dataset.detectionVerdict === verdict);
          b.setAttribute("aria-pressed", String(b.dataset.detectionVerdict === verdict));
        });
      });
  }

  function paint(entry) {
    entry.card.dataset.verdict = verdictOf(entry.image) || "";
    paintButtons(entry.card.querySelector(".verdicts"), entry.image);
    paintBoxes(entry.card.querySelector(".shot"), entry);
    if (zoomed !== entry) return;
    paintButtons($("zoom-verdicts"), entry.image);
    paintBoxes($("zoom-shot"), entry);
    paintDetectionList(entry);
  }

  // A clean or unsure image holds no object: its detections judged object are cleared.
  function clearObjectBoxes(entry) {
    const judged = judgedBoxes(entry.image);
    const objects = [...judged].filter(([, verdict]) => verdict === "object");
    objects.forEach(([key]) => judged.delete(key));
    if (!judged.size) boxVerdicts.delete(entry.image.key);
    return objects.length;
  }

  function setVerdict(entry, verdict) {
    if (verdict) verdicts.set(entry.image.key, verdict);
    else verdicts.delete(entry.image.key);
    const cleared = verdict && verdict !== "object" ? clearObjectBoxes(entry) : 0;
    if (cleared) {
      const what = cleared === 1 ? "detection judged object" : "detections judged object";
      const judged = LABELS[verdict].toLowerCase();
      showToast([`${cleared} ${what} cleared: the image is judged ${judged}.`]);
    }
    paint(entry);
    updateCounts();
  }

  // Replaces the image's detection verdicts by ``judged`` ({box, verdict}, boxes matched within
  // the tolerance); returns how many name no detection of the image.
  function setBoxVerdicts(entry, judged) {
    const boxes = new Map();
    let unmatched = 0;
    for (const { box, verdict } of judged) {
      const matches = entry.image.detections.filter((d) => sameBox(d.box, box));
      matches.forEach((d) => boxes.set(boxKey(d), verdict));
      if (!matches.length) unmatched += 1;
    }
    if (boxes.size) boxVerdicts.set(entry.image.key, boxes);
    else boxVerdicts.delete(entry.image.key);
    return unmatched;
  }

  // The filter is not applied again: the card stays while its other detections are judged.
  function setBoxVerdict(entry, detection, verdict) {
    const judged = judgedBoxes(entry.image);
    if (verdict) judged.set(boxKey(detection), verdict);
    else judged.delete(boxKey(detection));
    if (judged.size) boxVerdicts.set(entry.image.key, judged);
    else boxVerdicts.delete(entry.image.key);
    paint(entry);
    updateCounts();
  }

  function cycleBoxVerdict(entry, index) {
    const detection = entry.image.detections[index];
    const now = CYCLE.indexOf(boxVerdict(entry.image, detection));
    selectDetection(entry, index);
    setBoxVerdict(entry, detection, CYCLE[(now + 1) % CYCLE.length]);
  }

  // A click on the chosen verdict of a detection (in the zoom's list) takes it back.
  function toggleBoxVerdict(entry, index, verdict) {
    const detection = entry.image.detections[index];
    selectDetection(entry, index);
    const chosen = boxVerdict(entry.image, detection) === verdict;
    setBoxVerdict(entry, detection, chosen ? null : verdict);
  }

  // A click on the chosen verdict takes it back.
  function toggleVerdict(entry, verdict) {
    setVerdict(entry, verdicts.get(entry.image.key) === verdict ? null : verdict);
    applyFilter();
  }

  function boxCounts() {
    const counts = { false_alarm: 0, object: 0 };
    boxVerdicts.forEach((judged) => judged.forEach((verdict) => (counts[verdict] += 1)));
    return counts;
  }

  function updateCounts() {
    const counts = { negative: 0, object: 0, unsure: 0 };
    entries.forEach((entry) => {
      const verdict = verdictOf(entry.image);
      if (verdict) counts[verdict] += 1;
    });
    const total = entries.length || 1;
    const judged = counts.negative + counts.object + counts.unsure;
    document.querySelectorAll("#meter .segment").forEach((segment) => {
      const verdict = segment.classList[1];
      segment.style.width = percent(counts[verdict] / total);
    });
    const boxes = boxCounts();
    // Glyphs as on the boxes' labels: the line stays one line in the header.
    const detections =
      boxes.false_alarm + boxes.object
        ? ` \u00b7 boxes ${DETECTION_GLYPHS.false_alarm.trim()}${boxes.false_alarm} ` +
          `${DETECTION_GLYPHS.object.trim()}${boxes.object}`
        : "";
    $("counts").title = "boxes: \u2715 judged false alarms, \u2713 judged objects";
    $("counts").replaceChildren(
      el("b", null, String(judged)),
      ` of ${entries.length} judged \u00b7 ${counts.negative} clean \u00b7 ` +
        `${counts.object} object \u00b7 ${counts.unsure} unsure${detections}`
    );
    const dirty = snapshot() !== exported;
    $("dirty").hidden = !dirty;
    $("export").title = dirty
      ? "Download verdicts.json: some verdicts are not exported yet (key E)"
      : "Download verdicts.json (key E)";
  }

  // ------------------------------------------------------------------- sorting, filtering

  const byRound = (a, b) => a.image.number - b.image.number || a.image.rank - b.image.rank;
  const SORTS = {
    "score-desc": (a, b) => b.image.score - a.image.score || byRound(a, b),
    "score-asc": (a, b) => a.image.score - b.image.score || byRound(a, b),
    "round-asc": byRound,
    "round-desc": (a, b) => b.image.number - a.image.number || a.image.rank - b.image.rank,
  };

  function applySort() {
    order = [...entries].sort(SORTS[$("sort").value]);
    const fragment = document.createDocumentFragment();
    order.forEach((entry) => fragment.append(entry.card));
    $("grid").append(fragment);
  }

  function applyFilter() {
    const show = $("filter").value;
    const round = $("round").value;
    let shown = 0;
    for (const entry of order) {
      const verdict = verdictOf(entry.image) || "none";
      const visible =
        (show === "all" || show === verdict) && (round === "all" || round === minedIn(entry.image));
      entry.card.hidden = !visible;
      shown += visible;
    }
    $("empty").hidden = shown > 0;
  }

  function visibleEntries() {
    return order.filter((entry) => !entry.card.hidden);
  }

  // ------------------------------------------------------------------ focus and keyboard

  function setFocus(entry, scroll) {
    const previous = focused;
    if (previous) previous.card.classList.remove("focused");
    focused = entry;
    if (previous !== entry) {
      selected = 0; // a newly focused image starts from its best detection
      if (previous) paint(previous);
    }
    if (!entry) return;
    entry.card.classList.add("focused");
    paint(entry);
    if (scroll) entry.card.scrollIntoView({ block: "nearest" });
  }

  function selectDetection(entry, index) {
    setFocus(entry, false);
    selected = index;
    paint(entry);
  }

  // Keys judge the focused image's selected detection and select the next one.
  function judgeDetection(verdict) {
    if (!focused || focused.card.hidden) return move(0);
    const { detections } = focused.image;
    if (!detections.length) return;
    const current = focused;
    setBoxVerdict(current, detections[selected], verdict);
    selectDetection(current, Math.min(selected + 1, detections.length - 1));
  }

  // Key X: the focused image's detections not judged yet are false alarms.
  function restAreFalseAlarms() {
    if (!focused || focused.card.hidden) return move(0);
    const { image } = focused;
    const judged = judgedBoxes(image);
    for (const d of image.detections) {
      if (!judged.has(boxKey(d))) judged.set(boxKey(d), "false_alarm");
    }
    if (judged.size) boxVerdicts.set(image.key, judged);
    paint(focused);
    updateCounts();
  }

  function stepDetection(step) {
    if (!focused) return move(0);
    const last = focused.image.detections.length - 1;
    selectDetection(focused, Math.min(Math.max(selected + step, 0), Math.max(last, 0)));
  }

  function columns() {
    return getComputedStyle($("grid")).gridTemplateColumns.split(" ").length;
  }

  function neighbour(entry, step) {
    const visible = visibleEntries();
    if (!visible.length) return null;
    const index = visible.indexOf(entry);
    if (index < 0) return visible[0];
    return visible[Math.min(Math.max(index + step, 0), visible.length - 1)];
  }

  function move(step) {
    const target = neighbour(focused, step);
    setFocus(target, true);
    if (zoomed && target) openZoom(target);
  }

  // Keys judge the focused image and go on to the next one.
  function judgeAndAdvance(verdict) {
    if (!focused || focused.card.hidden) return move(0);
    const current = focused;
    const next = neighbour(current, 1);
    const previous = neighbour(current, -1);
    setVerdict(current, verdict);
    applyFilter(); // under "not judged yet" the judged card leaves the view
    let target = current;
    if (next !== current) target = next;
    else if (current.card.hidden) target = previous !== current ? previous : null;
    setFocus(target, true);
    if (zoomed && target) openZoom(target);
  }

  function onKey(event) {
    if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey) return;
    const key = event.key;
    if (KEYS[key]) judgeAndAdvance(KEYS[key]);
    else if (DETECTION_KEYS[key.toLowerCase()]) judgeDetection(DETECTION_KEYS[key.toLowerCase()]);
    else if (key === "x" || key === "X") restAreFalseAlarms();
    else if (key === "]") stepDetection(1);
    else if (key === "[") stepDetection(-1);
    else if ((key === "0" || key === "Backspace" || key === "Delete") && focused) {
      setVerdict(focused, null);
      applyFilter();
    } else if (key === "ArrowRight") move(1);
    else if (key === "ArrowLeft") move(-1);
    else if (key === "ArrowDown") move(zoomed ? 1 : columns());
    else if (key === "ArrowUp") move(zoomed ? -1 : -columns());
    else if (key === "Escape" && zoomed) closeZoom();
    else if (key === "Enter" || key === " ") toggleZoom();
    else if (key === "e" || key === "E") exportVerdicts();
    else return;
    event.preventDefault();
  }

  // --------------------------------------------------------------------------- the zoom

  function openZoom(entry) {
    setFocus(entry, true); // while the zoom still shows the image it showed
    zoomed = entry;
    const image = entry.image;
    const shot = shotElement(image, true);
    shot.id = "zoom-shot";
    // As large as the window allows, small images scaled up.
    const [width, height] = image.size || [1, 1];
    const fit = Math.min(1000, 0.68 * innerWidth, ((innerHeight - 48) * width) / height);
    shot.style.width = `${Math.max(fit, 200)}px`;
    $("zoom-shot").replaceWith(shot);
    $("zoom-name").textContent = image.name;
    const iteration = image.iteration !== null ? ` (iteration ${image.iteration})` : "";
    const dataset = image.dataset ? ` \u00b7 ${image.dataset}` : "";
    $("zoom-meta").textContent =
      `${minedIn(image)}${iteration} \u00b7 #${image.rank} ${rankMeaning(image)} \u00b7 ` +
      `highest score ${image.score.toFixed(3)}${dataset}`;
    $("zoom-path").textContent = image.key;
    $("zoom-detections").replaceChildren(...image.detections.map(detectionRow));
    $("zoom").hidden = false;
    document.body.style.overflow = "hidden";
    paint(entry);
  }

  // A row of the zoom's list: the detection's score and box, and its two verdicts.
  function detectionRow(detection, index) {
    const row = el("li", "detection");
    row.dataset.index = index;
    const box = `[${detection.box.map(Math.round).join(", ")}]`;
    const what = el("span", "what");
    what.append(el("b", null, detectionText(detection, 3)), el("span", "coords", box));
    const choices = el("span", "choices");
    Object.entries(DETECTION_LABELS).forEach(([verdict, label]) => {
      const button = el("button", null, DETECTION_GLYPHS[verdict] + label);
      button.type = "button";
      button.dataset.detectionVerdict = verdict;
      button.dataset.index = index;
      button.title = `${label} (key ${verdict === "object" ? "o" : "f"})`;
      choices.append(button);
    });
    row.append(what, choices);
    return row;
  }

  function toggleZoom() {
    const target = focused || neighbour(null, 0);
    if (zoomed) closeZoom();
    else if (target) openZoom(target);
  }

  function closeZoom() {
    zoomed = null;
    $("zoom").hidden = true;
    document.body.style.overflow = "";
  }

  // ---------------------------------------------------------------------- export, load

  // The image's judged detections, one per box, as the verdicts file lists them.
  function judgedDetections(image) {
    const judged = judgedBoxes(image);
    const listed = new Map();
    for (const d of image.detections) {
      const verdict = judged.get(boxKey(d));
      if (verdict && !listed.has(boxKey(d))) {
        listed.set(boxKey(d), { box: d.box, verdict, score: d.score, label: d.label });
      }
    }
    return [...listed.values()];
  }

  function fileEntry(fileName, verdict, detections, image) {
    const item = { file_name: fileName, verdict: verdict || null };
    if (detections.length) item.detections = detections;
    return { ...item, mined_in: image ? minedIn(image) : null, score: image ? image.score : null };
  }

  function exportDocument() {
    const listed = [];
    for (const { image } of entries) {
      const verdict = verdictOf(image);
      const detections = judgedDetections(image);
      if (verdict || detections.length) {
        listed.push(fileEntry(image.key, verdict, detections, image));
      }
    }
    // Verdicts mining obeys on images this page does not show (an online step done again).
    const absent = new Set([...verdicts.keys(), ...elsewhere.keys()].filter((k) => !byKey.has(k)));
    for (const key of absent) {
      listed.push(fileEntry(key, verdicts.get(key), elsewhere.get(key) || [], null));
    }
    return {
      format: "hnm_d2 verdicts",
      version: 2,
      run: data.run,
      exported: new Date().toISOString(),
      verdicts: listed,
    };
  }

  function exportVerdicts() {
    const file = exportDocument();
    const text = JSON.stringify(file, null, 2) + "\n";
    $("verdicts-json").value = text;
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const link = el("a");
    link.href = url;
    link.download = "verdicts.json";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    exported = snapshot();
    updateCounts();
    showToast([
      `verdicts.json downloaded (verdicts on ${file.verdicts.length} images). Give it to mining: `,
      el("code", null, "python -m hnm_d2.mine \u2026 --verdicts verdicts.json"),
    ]);
  }

  function loadVerdicts(fileName, text) {
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      return showToast([`${fileName} is not valid JSON (${error.message}).`], true);
    }
    const listed = parsed && Array.isArray(parsed.verdicts) ? parsed.verdicts : null;
    if (!listed) {
      return showToast([`${fileName} has no "verdicts" list: load a verdicts.json this page exported.`], true);
    }
    // Loaded into a page without changes to export, the file is what the page then shows.
    const unexported = snapshot() !== exported;
    let loaded = 0;
    let notShown = 0;
    let invalid = 0;
    let unmatched = 0;
    for (const item of listed) {
      const judgement = readEntry(item);
      const entry = judgement && byKey.get(item.file_name);
      if (!judgement) invalid += 1;
      else if (!entry) notShown += 1;
      else {
        // The file's entry replaces what the page had on that image, as mining merges it.
        if (judgement.verdict) verdicts.set(item.file_name, judgement.verdict);
        else verdicts.delete(item.file_name);
        unmatched += setBoxVerdicts(entry, judgement.detections);
        paint(entry);
        loaded += 1;
      }
    }
    if (!unexported) exported = snapshot();
    applyFilter();
    updateCounts();
    const notes = [];
    if (notShown) notes.push(`${notShown} name images not on this page (another run's?)`);
    if (invalid) {
      notes.push(
        `${invalid} have no file_name, no verdict negative / object / unsure and no judged ` +
          "detection, or a clean or unsure image with a detection judged object"
      );
    }
    if (unmatched) notes.push(`${unmatched} judged detections are none of their image's boxes`);
    const skipped = notes.length ? `; skipped: ${notes.join("; ")}` : "";
    showToast([`Loaded ${loaded} verdicts from ${fileName}${skipped}.`], notes.length > 0);
  }

  function isBox(box) {
    return Array.isArray(box) && box.length === 4 && box.every((v) => Number.isFinite(v));
  }

  // An entry of a verdicts file (version 1 or 2) as {verdict, detections}; null if unusable.
  function readEntry(item) {
    if (!item || typeof item.file_name !== "string") return null;
    const listed = item.detections === undefined ? [] : item.detections;
    if (!Array.isArray(listed)) return null;
    const detections = listed.filter((d) => d && isBox(d.box) && d.verdict in DETECTION_LABELS);
    if (detections.length !== listed.length) return null;
    const holdsObject = detections.some((d) => d.verdict === "object");
    if (item.verdict === null || item.verdict === undefined) {
      return detections.length ? { verdict: null, detections } : null;
    }
    if (!(item.verdict in LABELS) || (holdsObject && item.verdict !== "object")) return null;
    return { verdict: item.verdict, detections };
  }

  function showToast(parts, isError) {
    const toast = $("toast");
    toast.replaceChildren(...parts);
    toast.classList.toggle("error", Boolean(isError));
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (toast.hidden = true), isError ? 12000 : 7000);
  }

  // ----------------------------------------------------------------------------- wiring

  function describeRun() {
    const sources = [...new Set(entries.map((entry) => minedIn(entry.image)))];
    const obeyed = Object.keys({ ...data.verdicts, ...data.detection_verdicts }).length;
    const start = obeyed ? ` \u00b7 starts from the ${obeyed} verdicts mining obeys` : "";
    $("run").textContent =
      `${data.run} \u00b7 ${entries.length} images mined in ${sources.length} ` +
      `${entries.some((e) => e.image.kind === "step") ? "steps" : "rounds"}${start} \u00b7 ` +
      `page written ${data.generated}`;
    $("run").title = data.run;
    sources.forEach((source) => $("round").append(new Option(source, source)));
  }

  function wire() {
    $("grid").addEventListener("click", (event) => {
      const card = event.target.closest(".card");
      if (!card) return;
      const entry = byKey.get(card.dataset.key);
      const button = event.target.closest("button[data-verdict]");
      const chip = event.target.closest("button[data-detection]");
      setFocus(entry, false);
      if (button) toggleVerdict(entry, button.dataset.verdict);
      else if (chip) cycleBoxVerdict(entry, Number(chip.dataset.detection));
      else if (event.target.closest(".shot")) openZoom(entry);
    });
    $("zoom-verdicts").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-verdict]");
      if (button && zoomed) toggleVerdict(zoomed, button.dataset.verdict);
    });
    $("zoom").addEventListener("click", (event) => {
      if (!zoomed) return;
      const chip = event.target.closest("button[data-detection]");
      const choice = event.target.closest("button[data-detection-verdict]");
      const row = event.target.closest("li.detection");
      if (chip) cycleBoxVerdict(zoomed, Number(chip.dataset.detection));
      else if (choice) {
        toggleBoxVerdict(zoomed, Number(choice.dataset.index), choice.dataset.detectionVerdict);
      } else if (row) selectDetection(zoomed, Number(row.dataset.index));
    });
    $("zoom").addEventListener("click", (event) => {
      if (event.target === $("zoom")) closeZoom();
    });
    $("zoom-prev").addEventListener("click", () => move(-1));
    $("zoom-next").addEventListener("click", () => move(1));
    $("zoom-close").addEventListener("click", closeZoom);
    $("sort").addEventListener("change", applySort);
    $("filter").addEventListener("change", applyFilter);
    $("round").addEventListener("change", applyFilter);
    // A menu keeps the keyboard once chosen from: give the keys back to the cards.
    document.querySelectorAll(".controls select, .controls input").forEach((control) =>
      control.addEventListener("change", () => control.blur())
    );
    $("boxes").addEventListener("change", (event) =>
      document.body.classList.toggle("hide-boxes", !event.target.checked)
    );
    $("export").addEventListener("click", exportVerdicts);
    $("load").addEventListener("change", (event) => {
      const file = event.target.files[0];
      if (file) file.text().then((text) => loadVerdicts(file.name, text));
      event.target.value = ""; // the same file can be loaded again
    });
    $("toast").addEventListener("click", () => ($("toast").hidden = true));
    document.addEventListener("keydown", onKey);
    window.addEventListener("beforeunload", (event) => {
      if (snapshot() === exported) return;
      event.preventDefault();
      event.returnValue = "";
    });
  }

  entries.forEach((entry) => {
    entry.card = cardElement(entry.image);
    paint(entry);
  });
  $("zoom-verdicts").replaceWith(Object.assign(verdictButtons(), { id: "zoom-verdicts" }));
  describeRun();
  wire();
  applySort();
  applyFilter();
  updateCounts();
})();
