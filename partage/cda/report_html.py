"""The HTML form of CDA validation reports (the CLI's --format html and the /validate page).

One page, one language (French, like the ANS schematrons' messages); a Jinja template with
autoescaping: documents are untrusted input, every value they carry is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from jinja2 import Environment, PackageLoader, select_autoescape

from .findings import Report
from .messages import LAYER_NAMES, SEVERITY_NAMES, STATUS_NAMES, VERDICT_NAMES

_ENV = Environment(loader=PackageLoader("partage.cda", "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def to_html(reports: Sequence[Report], back_link: str | None = None) -> str:
    """A self-contained page for the reports; `back_link` adds a link back to the upload form."""
    return _ENV.get_template("report.html").render(
        reports=reports, back_link=back_link, layer_names=LAYER_NAMES, statuses=STATUS_NAMES,
        verdicts=VERDICT_NAMES, severities=SEVERITY_NAMES)
