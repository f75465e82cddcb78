"""junit.xml: one testcase per objective, so any CI that reads JUnit shows the SLOs as tests.

A testcase fails exactly when its objective blocks the decision: a critical FAIL, or a critical
INCONCLUSIVE (``type="inconclusive"``, so CI shows red where the gate would not promote). An
advisory FAIL or any WARN passes with a note in system-out, as the decision only warns on them;
an advisory INCONCLUSIVE is skipped. An invalid run adds one testcase in error.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from harness.judge.verdict import Classification, ObjectiveResult, Verdict
from harness.report.common import alert_text, estimate_text, stat_label, target_text


def render_junit(verdict: Verdict) -> str:
    """The junit.xml document (UTF-8, with an XML declaration)."""
    suite_name = f"slo.{verdict.policy}"
    root = ET.Element("testsuites", name="SLO verdict")
    suite = ET.SubElement(root, "testsuite", name=suite_name)
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="decision", value=verdict.decision.value)
    ET.SubElement(props, "property", name="policy", value=verdict.policy)
    failures = skipped = errors = 0
    for result in verdict.objectives:
        case = ET.SubElement(suite, "testcase", name=result.name, classname=suite_name, time="0")
        details = _details(result)
        blocking = result.critical and result.verdict in (
            Classification.FAIL,
            Classification.INCONCLUSIVE,
        )
        if blocking:
            failures += 1
            kind = "fail" if result.verdict is Classification.FAIL else "inconclusive"
            failure = ET.SubElement(case, "failure", message=result.reason, type=kind)
            failure.text = details
        elif result.verdict is Classification.INCONCLUSIVE:
            skipped += 1
            ET.SubElement(case, "skipped", message=f"advisory, inconclusive: {result.reason}")
        else:
            ET.SubElement(case, "system-out").text = details
    if verdict.invalid_reason is not None:
        errors += 1
        case = ET.SubElement(suite, "testcase", name="run is valid", classname=suite_name, time="0")
        ET.SubElement(case, "error", message=verdict.invalid_reason, type="invalid")
    tests = len(suite.findall("testcase"))
    for element in (root, suite):
        element.set("tests", str(tests))
        element.set("failures", str(failures))
        element.set("errors", str(errors))
        element.set("skipped", str(skipped))
        element.set("time", "0")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _details(result: ObjectiveResult) -> str:
    role = "critical" if result.critical else "advisory"
    return (
        f"{result.verdict.value} ({role}): {result.reason}\n"
        f"{stat_label(result)} = {estimate_text(result)}, target {target_text(result)}, "
        f"alert {alert_text(result)}, n = {result.n}"
    )
