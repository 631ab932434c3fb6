"""The review page as a person uses it, in a real browser (headless Chromium driven by
selenium): judge mined images, and their detections, by click and by key, export verdicts.json,
load it back into a fresh page; then mining with that file moves the images judged.

Chromium and chromedriver come from Debian's packages (``apt-get install chromium
chromium-driver``; ``make test`` installs them where missing). Without them this test is
skipped, or fails under ``make test`` (HNM_REQUIRE_BROWSER=1), which must run it.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog
from helpers import quick_mine_argv

from hnm_d2 import mine
from hnm_d2.engine.mining_state import read_json
from hnm_d2.engine.verdicts import match_mined_detections, read_verdicts_file

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

TRAIN_SIZE = 72  # synthetic_train
WAIT = 15  # seconds, for a download or the page to react


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium whose downloads go to tmp_path/downloads."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        message = "chromium and chromedriver not found: apt-get install chromium chromium-driver"
        if os.environ.get("HNM_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_for(condition, what):
    deadline = time.monotonic() + WAIT
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT} s for {what}")
        time.sleep(0.05)
    return value


def open_page(driver, out):
    driver.get((out / "mining" / "review.html").resolve().as_uri())
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    return driver.find_elements(By.CSS_SELECTOR, ".card")


def shown_verdicts(driver):
    """file_name -> the verdict its card shows ("" if none), in the page's order."""
    cards = driver.find_elements(By.CSS_SELECTOR, ".card")
    return {card.get_attribute("data-key"): card.get_attribute("data-verdict") for card in cards}


def press(driver, *keys):
    ActionChains(driver).send_keys(*keys).perform()


def box_verdicts(card):
    """The verdict each detection's box shows ("" if none), best first."""
    return [
        box.get_attribute("data-verdict") for box in card.find_elements(By.CSS_SELECTOR, ".box")
    ]


def verdict_button(card, verdict):
    return card.find_element(By.CSS_SELECTOR, f'button[data-verdict="{verdict}"]')


def classes(element):
    return set(element.get_attribute("class").split())


def as_page_shows(box):
    return [round(v, 1) for v in box]


def test_a_person_judges_exports_reloads_and_mining_obeys(browser, mined_run, synthetic_root):
    mined = [
        i["file_name"] for i in read_json(mined_run / "mining" / "round_1_selection.json")["images"]
    ]
    cards = open_page(browser, mined_run)
    assert [c.get_attribute("data-key") for c in cards] == mined  # hardest first

    # A click on the first card's "Object", then keys: move right, 3 (unsure) and 1 (clean),
    # each judging the focused card and moving on.
    cards[0].find_element(By.CSS_SELECTOR, 'button[data-verdict="object"]').click()
    press(browser, Keys.ARROW_RIGHT, "3", "1")
    judged = dict(zip(mined, ["object", "unsure", "negative"]))
    assert shown_verdicts(browser) == judged
    assert browser.find_element(By.ID, "counts").text.startswith("3 of 3 judged")

    # Sorting by score, lowest first, reverses the hardest-first order.
    Select(browser.find_element(By.ID, "sort")).select_by_value("score-asc")
    assert list(shown_verdicts(browser)) == mined[::-1]

    browser.find_element(By.ID, "export").click()
    exported = wait_for(lambda: list(browser.downloads.glob("verdicts.json")), "the download")[0]
    document = json.loads(exported.read_text())
    assert {v["file_name"]: v["verdict"] for v in document["verdicts"]} == judged
    shown_json = browser.find_element(By.ID, "verdicts-json").get_attribute("value")
    assert json.loads(shown_json)["verdicts"] == document["verdicts"]

    # A fresh page knows none of it, until the export is loaded back.
    open_page(browser, mined_run)
    assert set(shown_verdicts(browser).values()) == {""}
    browser.find_element(By.ID, "load").send_keys(str(exported))
    wait_for(lambda: shown_verdicts(browser) == judged, "the loaded verdicts")
    assert "Loaded 3 verdicts" in browser.find_element(By.ID, "toast").text

    # Mining obeys the file: round 2 trains on round 1's clean image alone, the one holding an
    # object is to be annotated, and the page it writes starts from these verdicts.
    flags = ["--rounds", 2, "--per-round", 3, "--verdicts", exported]
    mine.main(quick_mine_argv(synthetic_root, mined_run, *flags))
    assert read_json(mined_run / "mining" / "round_2.json")["train_size"] == TRAIN_SIZE + 1 + 3
    assert [r["file_name"] for r in DatasetCatalog.get("hnm_mined_round_1")] == [mined[2]]
    to_annotate = read_json(mined_run / "mining" / "to_annotate.json")
    root = Path(to_annotate["info"]["images_root"])
    assert [str(root / i["file_name"]) for i in to_annotate["images"]] == [mined[0]]
    assert len(open_page(browser, mined_run)) == 6
    shown = shown_verdicts(browser)
    assert {f: shown[f] for f in mined} == judged
    Select(browser.find_element(By.ID, "filter")).select_by_value("none")
    assert (
        len([c for c in browser.find_elements(By.CSS_SELECTOR, ".card") if c.is_displayed()]) == 3
    )


def test_a_person_judges_detections_exports_and_reloads(browser, mined_run):
    selection = read_json(mined_run / "mining" / "round_1_selection.json")["images"]
    mined = [image["file_name"] for image in selection]
    sizes = [len(image["detections"]["boxes"]) for image in selection]
    assert min(sizes) >= 2
    cards = open_page(browser, mined_run)

    # A click on the best box's label: a false alarm. Then keys: ] selects the next box, o
    # judges it an object. The image holds an object, which its Object button shows outlined
    # (implied by the box, not the image's own verdict).
    first, second, third = cards
    first.find_element(By.CSS_SELECTOR, 'button[data-detection="0"]').click()
    press(browser, "]", "o")
    assert box_verdicts(first)[:2] == ["false_alarm", "object"]
    assert first.get_attribute("data-verdict") == "object"
    assert classes(verdict_button(first, "object")) >= {"chosen", "implied"}

    # The next image by key: f on its best box, x on the rest. False alarms alone judge no image;
    # Clean is suggested, and 1 says so.
    press(browser, Keys.ARROW_RIGHT, "f", "x")
    assert box_verdicts(second) == ["false_alarm"] * sizes[1]
    assert second.get_attribute("data-verdict") == ""
    assert "suggested" in classes(verdict_button(second, "negative"))
    press(browser, "1")
    assert second.get_attribute("data-verdict") == "negative"

    # In the zoom, the third image's second box judged an object by its button; then the image
    # judged clean: its object box is cleared, as the toast says.
    press(browser, Keys.ENTER)
    row = browser.find_element(By.CSS_SELECTOR, '#zoom-detections li[data-index="1"]')
    row.find_element(By.CSS_SELECTOR, 'button[data-detection-verdict="object"]').click()
    assert box_verdicts(third)[1] == "object" and third.get_attribute("data-verdict") == "object"
    press(browser, Keys.ESCAPE)
    # mined_run is a copy, moved away from the data: the zoom's original file is not found
    # by its relative link, and the zoom shows the thumbnail instead.
    missing = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("ERR_FILE_NOT_FOUND" in e["message"] for e in missing)
    verdict_button(third, "negative").click()
    assert "1 detection judged object cleared" in browser.find_element(By.ID, "toast").text
    assert set(box_verdicts(third)) == {""}
    counts = browser.find_element(By.ID, "counts").text
    assert counts.endswith(f"boxes \N{MULTIPLICATION X}{1 + sizes[1]} \N{CHECK MARK}1")

    browser.find_element(By.ID, "export").click()
    exported = wait_for(lambda: list(browser.downloads.glob("verdicts.json")), "the download")[0]
    document = json.loads(exported.read_text())
    assert document["version"] == 2
    listed = {entry["file_name"]: entry for entry in document["verdicts"]}
    boxes = [[as_page_shows(box) for box in image["detections"]["boxes"]] for image in selection]
    assert listed[mined[0]]["verdict"] == "object"
    assert [(d["box"], d["verdict"]) for d in listed[mined[0]]["detections"]] == [
        (boxes[0][0], "false_alarm"),
        (boxes[0][1], "object"),
    ]
    assert listed[mined[1]]["verdict"] == "negative"
    assert [(d["box"], d["verdict"]) for d in listed[mined[1]]["detections"]] == [
        (box, "false_alarm") for box in boxes[1]
    ]
    assert listed[mined[2]]["verdict"] == "negative" and "detections" not in listed[mined[2]]
    # Mining reads the export, each box naming a detection it recorded.
    read = read_verdicts_file(str(exported))
    recorded = {image["file_name"]: image["detections"] for image in selection}
    matched = match_mined_detections(read.detections, recorded, str(exported), "mining")
    assert matched[mined[0]] == [
        {"box": selection[0]["detections"]["boxes"][0], "verdict": "false_alarm"},
        {"box": selection[0]["detections"]["boxes"][1], "verdict": "object"},
    ]

    # A fresh page knows none of it, until the export is loaded back.
    cards = open_page(browser, mined_run)
    assert all(set(box_verdicts(card)) == {""} for card in cards)
    browser.find_element(By.ID, "load").send_keys(str(exported))
    wait_for(lambda: box_verdicts(cards[0])[:2] == ["false_alarm", "object"], "the loaded boxes")
    assert shown_verdicts(browser) == dict(zip(mined, ["object", "negative", "negative"]))
    assert box_verdicts(cards[1]) == ["false_alarm"] * sizes[1]
    assert "Loaded 3 verdicts" in browser.find_element(By.ID, "toast").text
