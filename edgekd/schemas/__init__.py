"""JSON Schemas of the files edgekd writes (report.schema.json: report.json)."""
