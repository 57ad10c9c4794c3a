"""The professional's page in a browser: server time and first paint, signed in for real.

    .venv/bin/python benchmarks/bench_page.py                     # SQLite in a temp dir
    .venv/bin/python benchmarks/bench_page.py --database postgresql+psycopg://postgres@127.0.0.1/bench

Builds the sample patient of 31 documents (bench_clinical.build: the real ingest flow), starts
`partage serve` (2 workers, no --insecure-dev) and `partage dev-idp`, signs in with headless
Chromium through Selenium, then loads the page --repeat times and reads the browser's own
timings (Navigation Timing and Paint Timing): the server's time to the first byte
(responseStart - requestStart, loopback network included), the first contentful paint from
the start of navigation when Chromium reports it, and the end of the load event (the page
has no script, image or stylesheet to fetch, so it is painted by then: an upper bound). Nothing is asserted; figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_clinical import build  # noqa: E402
from benchmarks.common import fmt, quantile  # noqa: E402
from partage.config import Settings  # noqa: E402
from partage.services import Services  # noqa: E402
from tests import clinical_support as C  # noqa: E402
from tests.page_support import DevIdp  # noqa: E402
from tests.support import LiveServer  # noqa: E402

TIMINGS = """
const nav = performance.getEntriesByType('navigation')[0];
const paint = performance.getEntriesByName('first-contentful-paint')[0];
return [nav.responseStart - nav.requestStart, paint ? paint.startTime : null, nav.encodedBodySize,
        nav.loadEventEnd];
"""


def _stats(values: list[float]) -> str:
    p95 = fmt(quantile(values, 0.95), 1)   # n/a below 20 loads (benchmarks.common.MIN_SAMPLES)
    return f"median {statistics.median(values):7.1f}  p95 {p95:>7}  max {max(values):7.1f}  (n={len(values)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--database", default="")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not chromium or not Path(driver_path).exists():
        print("chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)",
              file=sys.stderr)
        return 2
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        from partage.access.credentials import DevAuthority

        authority = DevAuthority.create()
        authority.save(Path(tmp) / "ca")
        services = Services.open(Settings(data_dir=data, database_url=args.database))
        rid = C.public_id(services, build(services, Path(args.corpus)))
        services.close()
        with DevIdp(Path(tmp)) as idp:
            os.environ.update(idp.server_args())
            extra = ["--trust", str(Path(tmp) / "ca" / "ca.pem")]
            with LiveServer(data, database_url=args.database, insecure_dev=False, mllp=False, workers=2,
                            extra_args=extra) as live:
                options = webdriver.ChromeOptions()
                options.binary_location = chromium
                for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--window-size=1920,1080"):
                    options.add_argument(arg)
                driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path),
                                          options=options)
                try:
                    url = f"{live.base_url}/dossier/{rid}"
                    driver.get(url)
                    driver.find_element(By.CSS_SELECTOR, "button[value='gp']").click()
                    WebDriverWait(driver, 30).until(lambda d: d.current_url == url)   # back from the provider
                    server, paint, loaded, size = [], [], [], 0
                    first = driver.current_window_handle
                    for _ in range(args.repeat):
                        driver.switch_to.new_window("tab")   # a new tab each time: Chromium reports the
                        driver.get(url)                      # first paint of a tab's first page
                        ttfb, fcp, size, load_end = driver.execute_script(TIMINGS)
                        loaded.append(load_end)
                        driver.close()
                        driver.switch_to.window(first)
                        server.append(ttfb)
                        if fcp is not None:
                            paint.append(fcp)
                finally:
                    driver.quit()
    backend = "postgresql" if args.database else "sqlite"
    print(f"the page of the 31-document patient, {backend}, 2 gunicorn workers, signed in; {args.repeat} loads; "
          f"load average {os.getloadavg()[0]:.2f}; {size // 1024} KB")
    print(f"  server (request -> first byte) ms: {_stats(server)}")
    print(f"  first contentful paint ms:         {_stats(paint) if paint else 'not reported by the browser'}"
          f" ({len(paint)} of {args.repeat} loads: Chromium reports it for a visible tab only)")
    print(f"  load event end ms (>= first paint): {_stats(loaded)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
