"""Terminology: IHE SVS value sets (CI-SIS JDV) shared by the CDA profile engine and XDS metadata."""
