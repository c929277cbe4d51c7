"""`saliency explore` in a real browser (headless Chromium driven by Selenium), and its safety checks.

CI installs Chromium and its driver from Debian in .ci/run; the test fails, not skips, without them.
"""

import os
import socket
import time
from pathlib import Path

import pytest

import discovery
from discovery.directions import Directions
from saliency.cli import main
from saliency.explorer import ANNOTATIONS, explore, read_annotations

DEMO_DIRECTIONS = Path(__file__).resolve().parent / "fixtures" / "demo-directions.pt"  # the directions `make demo` wrote
CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def directions_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explore") / "found"
    discovery.discover("horse-64", method="sefa", out=out, top_k=6, charts=0, progress=False, device="cpu")
    return out / "directions.pt"


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1500"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _wait(condition, seconds=60.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the page")


def test_the_page_moves_images_and_saves_labels(tmp_path):
    from selenium.webdriver.common.by import By

    assert Path(CHROMIUM).exists() and Path(DRIVER).exists(), "install chromium and chromium-driver (apt-get), as .ci/run does"
    directions_file = tmp_path / "directions.pt"
    directions_file.write_bytes(DEMO_DIRECTIONS.read_bytes())  # the demo's directions, in a folder the test may write
    app, url, explorer = explore(directions_file, port=_free_port(), block=False, device="cpu")
    browser = _browser()
    try:
        browser.get(url)
        image_src = lambda: next((i.get_attribute("src") for i in browser.find_elements(By.CSS_SELECTOR, "#images img")), None)  # noqa: E731
        first = _wait(image_src)
        first_direction = explorer.index_of(explorer.choices()[0])
        # Move the first shift slider as a person would drag it: the pictured images change.
        browser.execute_script(
            "const s = document.querySelector('#shift-0 input[type=range]'); s.value = 3;"
            "s.dispatchEvent(new Event('input', {bubbles: true})); s.dispatchEvent(new Event('change', {bubbles: true}));")
        moved = _wait(lambda: image_src() if image_src() not in (None, first) else None)
        assert moved != first
        time.sleep(1)  # let the mask preview settle before the picture
        browser.save_screenshot(str(tmp_path / "explorer.png"))  # the README's docs/explorer.jpg is this file
        assert (tmp_path / "explorer.png").stat().st_size > 10_000
        if os.environ.get("SALIENCY_SCREENSHOTS"):
            import shutil

            shutil.copy(tmp_path / "explorer.png", Path(os.environ["SALIENCY_SCREENSHOTS"]) / "explorer.png")
        # Name the direction, then mark it as the background direction: both land in directions.pt.
        box = browser.find_element(By.CSS_SELECTOR, "#label textarea, #label input")
        box.send_keys("lights the horse")
        browser.find_element(By.CSS_SELECTOR, "#save-label").click()
        _wait(lambda: "lights the horse" in browser.find_element(By.CSS_SELECTOR, "#status").text)
        browser.find_element(By.CSS_SELECTOR, "#mark-background").click()
        _wait(lambda: "is the background direction" in browser.find_element(By.CSS_SELECTOR, "#status").text)
    finally:
        browser.quit()
        app.close()
    saved = Directions.load(directions_file)
    assert saved.labels[first_direction] == "lights the horse"
    assert saved.background["index"] == first_direction and saved.background["sign"] == 1
    assert saved.background["source"] == "a person (saliency explore)" and saved.background["partner"] == 1
    assert [entry["change"] for entry in saved.manifest["label_history"]][-2:] == [
        f"direction {first_direction} labelled 'lights the horse'",
        f"direction {first_direction} marked as the background direction, sign +1"]
    assert read_annotations(directions_file.parent / ANNOTATIONS) == {**saved.labels, first_direction: "lights the horse"}
    assert saved.labels == {0: "lights the horse", 1: "darken the object"}  # the method's own label of the partner stays


def test_annotations_are_read_back_and_the_server_stays_on_this_machine(directions_file, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "directions.pt"
    plain = Directions.load(directions_file)
    plain.labels = {}
    plain.save(copy)
    (tmp_path / ANNOTATIONS).write_text("0: zoom\n# a comment\n3: background removal\n")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # an environment asking for every interface must not win
    port = _free_port()
    app, url, explorer = explore(copy, port=port, block=False, device="cpu")
    try:
        assert url.startswith(f"http://127.0.0.1:{port}") and explorer.directions.labels == {0: "zoom", 3: "background removal"}
        listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        local = [fields[1] for fields in listening if fields[3] == "0A"]  # sockets in LISTEN state
        assert f"0100007F:{port:04X}" in local and f"00000000:{port:04X}" not in local  # 127.0.0.1 only
    finally:
        app.close()
    # The command line's default is localhost; a bad file is one line before any server starts.
    from saliency.cli import build_parser

    args = build_parser().parse_args(["explore", "--directions", str(copy)])
    assert args.host == "127.0.0.1"
    (tmp_path / "bad.pt").write_text("not a directions file")
    code = main(["explore", "--directions", str(tmp_path / "bad.pt"), "--port", str(port), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bad.pt" in err
    with socket.socket() as s:  # nothing listens: the server never started
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_traversal_gif_and_mask_preview_without_a_browser(directions_file, tmp_path):
    from PIL import Image

    from saliency.explorer import Explorer

    copy = tmp_path / "directions.pt"
    copy.write_bytes(directions_file.read_bytes())
    explorer = Explorer(copy, device="cpu", samples=2)
    gif = explorer.traversal_gif(0, 2, explorer.order[0], frames=5)
    with Image.open(gif) as animation:
        assert animation.n_frames == 8 and animation.size[0] >= 2 * 64
    still = explorer.images(0, 2, [])
    moved = explorer.images(0, 2, [(explorer.order[0], 3.0)])
    assert still.shape == moved.shape and (still != moved).any()
    masks, caption = explorer.masks(0, 2, explorer.order[0], "lighting")
    assert masks.shape[1] == still.shape[1] and "lighting rule" in caption
    _, caption = explorer.masks(0, 2, explorer.order[0], "two-direction")  # sefa records no partner: said, not a crash
    assert "needs a partner direction" in caption


def test_rule_options_classes_and_truncation(directions_file, tmp_path):
    import torch

    from discovery.errors import UserError
    from discovery.generators import LatentGenerator
    from saliency.explorer import Explorer, parse_options

    assert parse_options("smooth=3, max_area=0.6") == {"smooth": 3, "max_area": 0.6}
    with pytest.raises(UserError, match="key=value"):
        parse_options("smooth 3")
    explorer = Explorer(directions_file, device="cpu", samples=2)
    plain, _ = explorer.masks(0, 2, explorer.order[0], "lighting")
    smoothed, caption = explorer.masks(0, 2, explorer.order[0], "lighting", options="smooth=5 bimodality=0")
    assert not np_equal(plain, smoothed) and "lighting rule" in caption
    _, caption = explorer.masks(0, 2, explorer.order[0], "lighting", options="threshold=0.5")
    assert "does not apply to the lighting rule" in caption

    class Classes(LatentGenerator):  # a conditional generator: the class sets the image's brightness
        dim_z, resolution, conditional = 4, 8, True

        def __init__(self):
            super().__init__()
            self.truncation = 1.0

        def sample_condition(self, n, generator=None):
            return torch.zeros(n, dtype=torch.long)

        def forward(self, z, condition=None):
            level = (condition.float() / 1000.0 - 0.5) * self.truncation
            return (level[:, None, None, None] + 0 * z[:, :1, None, None]).expand(-1, 3, 8, 8)

    toy = tmp_path / "toy.pt"
    Directions(torch.eye(4), "classes-toy", "truth").save(toy)
    conditional = Explorer(toy, generator=Classes(), device="cpu", samples=2)
    assert conditional.conditional and conditional.has_truncation
    default = conditional.images(0, 2, [])
    assert conditional.set_class("980") == "class 980"
    assert not np_equal(conditional.images(0, 2, []), default)
    conditional.set_truncation(0.5)
    assert conditional.generator.truncation == 0.5
    with pytest.raises(UserError, match="truncation"):
        conditional.set_truncation(2)


def np_equal(a, b) -> bool:
    import numpy as np

    return a.shape == b.shape and bool(np.array_equal(a, b))
