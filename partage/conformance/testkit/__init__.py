"""Runner for the NIST XDS.b test kit (test plans from usnistgov/iheos-toolkit2).

plan (read the kit) -> context (logs, ids, patients) -> transactions (build and send)
-> assertions (check answers) -> runner (order, results) -> report (console, JSON, JUnit);
cli wires them as `partage testkit nist`.
"""
