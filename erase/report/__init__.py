"""What people read: the terminal's tables (``console``), figures (``plots``), and the report of a
run or a study (``html``: report.html and report.md, study.md)."""
