"""Reports: queries over the rollups, report views, rendering, charts and export."""
