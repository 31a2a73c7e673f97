"""A run's report: report.json built from validation, read back (older versions too), and
rendered as report.md, report.html and the ``edgekd compare`` table."""
