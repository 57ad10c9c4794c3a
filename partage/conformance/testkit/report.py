"""Results for people and for machines: console lines, a JSON summary, JUnit XML."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from lxml import etree

from .runner import FAILED, NOT_RUN, PASSED, TestResult


def counts(results: Iterable[TestResult]) -> dict[str, int]:
    results = list(results)
    return {"passed": sum(r.status == PASSED for r in results),
            "failed": sum(r.status == FAILED for r in results),
            "not_run": sum(r.status == NOT_RUN for r in results)}


def line(result: TestResult, width: int = 26) -> str:
    """One console line: id, outcome, and for anything but a pass, the first reason."""
    label = {PASSED: "passed", FAILED: "FAILED", NOT_RUN: "not run"}[result.status]
    text = f"{result.id:<{width}} {label:<8} {result.seconds:6.1f}s"
    if result.status != PASSED and result.detail:
        text += f"  {' '.join(result.detail.split())}"
    return text


def summary_line(results: Iterable[TestResult]) -> str:
    c = counts(results)
    return f"{c['passed']} passed, {c['failed']} failed, {c['not_run']} not run"


class Console:
    """Prints progress as tests start and finish, so a long run is visibly alive."""

    def __init__(self, stream: TextIO, total: int, verbose: bool = False) -> None:
        self.stream = stream
        self.total = total
        self.done = 0
        self.verbose = verbose
        self.width = 26

    def started(self, test_id: str) -> None:
        if self.verbose:
            self.stream.write(f"[{self.done + 1}/{self.total}] {test_id} ...\n")
            self.stream.flush()

    def finished(self, result: TestResult) -> None:
        self.done += 1
        self.stream.write(f"[{self.done:>{len(str(self.total))}}/{self.total}] {line(result, self.width)}\n")
        self.stream.flush()


def to_json(results: list[TestResult]) -> dict[str, Any]:
    document: dict[str, Any] = dict(counts(results))
    document["tests"] = {}
    for result in results:
        document["tests"][result.id] = {
            "status": result.status,
            "title": result.title,
            "detail": result.detail,
            "seconds": result.seconds,
            "prerequisites": result.prerequisites,
            "sections": [asdict(section) for section in result.sections],
        }
    return document


def write_json(results: list[TestResult], path: Path | str) -> None:
    Path(path).write_text(json.dumps(to_json(results), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def to_junit(results: list[TestResult], suite: str = "nist-xds-testkit") -> etree._Element:
    c = counts(results)
    root = etree.Element("testsuites")
    testsuite = etree.SubElement(root, "testsuite", name=suite, tests=str(len(results)),
                                 failures=str(c["failed"]), skipped=str(c["not_run"]), errors="0",
                                 time=f"{sum(r.seconds for r in results):.3f}")
    for result in results:
        case = etree.SubElement(testsuite, "testcase", classname=suite, name=result.id,
                                time=f"{result.seconds:.3f}")
        if result.status == FAILED:
            etree.SubElement(case, "failure", message=result.detail[:1000]).text = _steps_text(result)
        elif result.status == NOT_RUN:
            etree.SubElement(case, "skipped", message=result.detail[:1000])
    return root


def write_junit(results: list[TestResult], path: Path | str) -> None:
    Path(path).write_bytes(etree.tostring(to_junit(results), xml_declaration=True, encoding="UTF-8",
                                          pretty_print=True))


def _steps_text(result: TestResult) -> str:
    lines = []
    for section in result.sections:
        for step in section.steps:
            lines.append(f"{section.name}/{step.id}: {step.status}" + (f" - {step.detail}" if step.detail else ""))
    return "\n".join(lines)
