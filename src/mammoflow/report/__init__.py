"""The report stage: the Table 2 replica, figures, audits and provenance (results/report/)."""
