// The review page of the images hnm_d2 mined: cards, verdicts, sorting, the zoom, export and
// load. Its data (the images, their detections, the verdicts mining obeys already) is the JSON
// that hnm_d2/engine/review_page.py inlines in #review-data.
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

  const verdicts = new Map(Object.entries(data.verdicts)); // file_name -> verdict
  const entries = data.images.map((image) => ({ image, card: null }));
  const byKey = new Map(entries.map((entry) => [entry.image.key, entry]));
  let exported = snapshot(); // the verdicts as last exported (or as mining obeys them)
  let order = entries; // the cards in the sort order
  let focused = null;
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

  function percent(value) {
    return `${(100 * value).toFixed(3)}%`;
  }

  // ``best``: the image's highest-scored detection (the detections come best first).
  function boxElement(detection, [width, height], best) {
    const [x0, y0, x1, y1] = detection.box;
    const box = el("div", best ? "box best" : "box");
    box.style.left = percent(x0 / width);
    box.style.top = percent(y0 / height);
    box.style.width = percent((x1 - x0) / width);
    box.style.height = percent((y1 - y0) / height);
    if (y0 / height < 0.1) box.classList.add("low"); // no room above it: label inside
    const label = data.show_classes ? `${detection.label} ` : "";
    box.append(el("span", null, label + detection.score.toFixed(2)));
    return box;
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
      image.detections.forEach((d, index) => shot.append(boxElement(d, image.size, index === 0)));
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
    return JSON.stringify([...verdicts.entries()].sort());
  }

  function paint(entry) {
    const verdict = verdicts.get(entry.image.key) || "";
    entry.card.dataset.verdict = verdict;
    const groups = [entry.card.querySelector(".verdicts")];
    if (zoomed === entry) groups.push($("zoom-verdicts"));
    for (const group of groups) {
      group.querySelectorAll("button").forEach((b) => {
        b.classList.toggle("chosen", b.dataset.verdict === verdict);
        b.setAttribute("aria-pressed", String(b.dataset.verdict === verdict));
      });
    }
  }

  function setVerdict(entry, verdict) {
    if (verdict) verdicts.set(entry.image.key, verdict);
    else verdicts.delete(entry.image.key);
    paint(entry);
    updateCounts();
  }

  // A click on the chosen verdict takes it back.
  function toggleVerdict(entry, verdict) {
    setVerdict(entry, verdicts.get(entry.image.key) === verdict ? null : verdict);
    applyFilter();
  }

  function updateCounts() {
    const counts = { negative: 0, object: 0, unsure: 0 };
    entries.forEach((entry) => {
      const verdict = verdicts.get(entry.image.key);
      if (verdict) counts[verdict] += 1;
    });
    const total = entries.length || 1;
    const judged = counts.negative + counts.object + counts.unsure;
    document.querySelectorAll("#meter .segment").forEach((segment) => {
      const verdict = segment.classList[1];
      segment.style.width = percent(counts[verdict] / total);
    });
    $("counts").replaceChildren(
      el("b", null, String(judged)),
      ` of ${entries.length} judged \u00b7 ${counts.negative} clean \u00b7 ` +
        `${counts.object} object \u00b7 ${counts.unsure} unsure`
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
      const verdict = verdicts.get(entry.image.key) || "none";
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
    if (focused) focused.card.classList.remove("focused");
    focused = entry;
    if (!entry) return;
    entry.card.classList.add("focused");
    if (scroll) entry.card.scrollIntoView({ block: "nearest" });
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
    zoomed = entry;
    setFocus(entry, true);
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
      `${minedIn(image)}${iteration} \u00b7 #${image.rank} hardest \u00b7 highest score ` +
      `${image.score.toFixed(3)}${dataset}`;
    $("zoom-path").textContent = image.key;
    $("zoom-detections").replaceChildren(
      ...image.detections.map((d) => {
        const label = data.show_classes ? `${d.label} ` : "";
        return el("li", null, `${label}${d.score.toFixed(3)}  [${d.box.map(Math.round).join(", ")}]`);
      })
    );
    $("zoom").hidden = false;
    document.body.style.overflow = "hidden";
    paint(entry);
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

  function exportDocument() {
    const listed = [];
    for (const { image } of entries) {
      const verdict = verdicts.get(image.key);
      if (verdict) {
        listed.push({ file_name: image.key, verdict, mined_in: minedIn(image), score: image.score });
      }
    }
    // Verdicts mining obeys on images this page does not show (an online step done again).
    for (const [key, verdict] of verdicts) {
      if (!byKey.has(key)) listed.push({ file_name: key, verdict, mined_in: null, score: null });
    }
    return {
      format: "hnm_d2 verdicts",
      version: 1,
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
      `verdicts.json downloaded (${file.verdicts.length} verdicts). Give it to mining: `,
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
    let elsewhere = 0;
    let invalid = 0;
    for (const item of listed) {
      const entry = item && byKey.get(item.file_name);
      if (!item || typeof item.file_name !== "string" || !(item.verdict in LABELS)) invalid += 1;
      else if (!entry) elsewhere += 1;
      else {
        verdicts.set(item.file_name, item.verdict);
        paint(entry);
        loaded += 1;
      }
    }
    if (!unexported) exported = snapshot();
    applyFilter();
    updateCounts();
    const notes = [];
    if (elsewhere) notes.push(`${elsewhere} name images not on this page (another run's?)`);
    if (invalid) notes.push(`${invalid} have no file_name or no verdict negative / object / unsure`);
    const skipped = notes.length ? `; skipped: ${notes.join("; ")}` : "";
    showToast([`Loaded ${loaded} verdicts from ${fileName}${skipped}.`], notes.length > 0);
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
    const obeyed = Object.keys(data.verdicts).length;
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
      setFocus(entry, false);
      if (button) toggleVerdict(entry, button.dataset.verdict);
      else if (event.target.closest(".shot")) openZoom(entry);
    });
    $("zoom-verdicts").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-verdict]");
      if (button && zoomed) toggleVerdict(zoomed, button.dataset.verdict);
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
