"""The report page's own check, in a real browser: it passes a sound page and catches a broken one."""

import base64

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from browser import load

from mammoflow.report import page


def _png(tmp_path):
    figure = plt.figure(figsize=(2, 1))
    figure.gca().plot([0, 1], [0, 1])
    path = tmp_path / "plot.png"
    figure.savefig(path)
    plt.close(figure)
    return path.read_bytes()


def test_browser_check_passes_a_sound_page_and_flags_broken_images_and_script_errors(tmp_path):
    png = _png(tmp_path)
    sound = tmp_path / "sound.html"
    sound.write_text(page.document("t", [("a", "A")], page.section("a", "A", page.figure(png, "a plot"))))
    check, images, problems, _ = load(sound, screenshot=tmp_path / "sound.png")
    assert (check, images, problems) == ("ok", 1, [])
    assert (tmp_path / "sound.png").stat().st_size > 1000

    broken_png = base64.b64encode(b"not a png").decode()
    body = (
        page.figure(png, "fine")
        + f'<img src="data:image/png;base64,{broken_png}" alt="bad bytes">'
        + "<script>undefinedFunction();</script>"
    )
    broken = tmp_path / "broken.html"
    broken.write_text(page.document("t", [], body))
    check, images, problems, _ = load(broken)
    assert check == "errors" and images == 2
    assert any("bad bytes" in p for p in problems)
    assert any("script error" in p and "undefinedFunction" in p for p in problems)
