"""Screenshots of the review queue in a real Label Studio: the task list sorted by the masks'
``quality`` (worst first) and one task with its pseudo-mask as a prediction (docs/images/).

Labels --n toy-world test images with toyclip (local Ray), exports them with
``--format labelstudio``, starts Label Studio from the review environment on loopback
(``make review-tools``), creates the project from the exported config, connects the images'
folder as local storage, imports the tasks, and drives Debian's Chromium with Playwright.

    apt-get install chromium && .venv/bin/pip install playwright   # the browser driver, once
    .venv/bin/python benchmarks/label_studio_screenshots.py [--n 24] [--to docs/images]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--to", default="docs/images")
    p.add_argument("--workdir", default="outputs/label-studio-screenshots", help="wiped first")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    a = p.parse_args()

    import ray
    from playwright.sync_api import sync_playwright

    from wsss_ray.config import resolve_label_job
    from wsss_ray.export import export
    from wsss_ray.pipeline import run
    from wsss_ray.testing.review_tools import PASSWORD, USER, label_studio_server
    from wsss_ray.toyworld import default_collection

    work = Path(a.workdir).absolute()
    shutil.rmtree(work, ignore_errors=True)
    manifest = default_collection("test", a.n, work / "toyworld-test")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    run(resolve_label_job({"model": "toyclip", "input": manifest, "output": str(work / "pseudolabels")}))
    ray.shutdown()
    export(str(work / "pseudolabels"), "labelstudio", str(work / "ls"), document_root=str(work))
    tasks = json.loads((work / "ls" / "tasks.json").read_text())
    (work / "label-studio").mkdir()
    out = Path(a.to)
    out.mkdir(parents=True, exist_ok=True)

    with label_studio_server(work / "label-studio", work) as studio:
        project = studio.call("POST", "/api/projects", json={
            "title": "wsss-ray review queue", "label_config": (work / "ls" / "labeling_config.xml").read_text()})
        studio.call("POST", "/api/storages/localfiles", json={"project": project["id"], "title": "toy world",
                                                              "path": str(work / "toyworld-test"), "use_blob_urls": False})
        studio.call("POST", f"/api/projects/{project['id']}/import", json=tasks)
        # the Data Manager's default tab, sorted by the prediction score (quality), lowest first
        views = studio.call("GET", "/api/dm/views", params={"project": project["id"]})
        view = {"project": project["id"], "data": {
            "title": "by quality", "ordering": ["tasks:predictions_score"],
            "filters": {"conjunction": "and", "items": []},
            "hiddenColumns": {"explore": ["tasks:annotations_results", "tasks:predictions_results", "tasks:inner_id",
                                          "tasks:annotators", "tasks:total_annotations", "tasks:cancelled_annotations"],
                              "labeling": ["tasks:data.id", "tasks:annotations_results", "tasks:predictions_results",
                                           "tasks:inner_id", "tasks:annotators", "tasks:total_annotations",
                                           "tasks:cancelled_annotations", "tasks:total_predictions"]}}}
        if views:
            studio.call("PATCH", f"/api/dm/views/{views[0]['id']}", json=view)
        else:
            studio.call("POST", "/api/dm/views", json=view)
        listed = studio.call("GET", "/api/tasks", params={"project": project["id"], "fields": "all",
                                                          "ordering": "tasks:predictions_score"})["tasks"]
        worst = min(listed, key=lambda t: t["predictions"][0]["score"])

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=a.chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{studio.url}/user/login/")
            page.fill("input[name=email]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{studio.url}/projects/{project['id']}/data")
            page.wait_for_timeout(5000)
            page.screenshot(path=str(out / "label-studio-queue.png"))
            page.goto(f"{studio.url}/projects/{project['id']}/data?task={worst['id']}")
            page.wait_for_timeout(6000)
            page.get_by_text(worst["predictions"][0]["result"][0]["value"]["brushlabels"][0], exact=True).last.click()
            page.wait_for_timeout(2000)  # the selected region is drawn highlighted
            page.screenshot(path=str(out / "label-studio-prediction.png"))
            browser.close()
    print(json.dumps({"tasks": len(tasks), "worst_task": worst["data"]["id"],
                      "worst_score": worst["predictions"][0]["score"],
                      "screenshots": [str(out / "label-studio-queue.png"), str(out / "label-studio-prediction.png")]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
