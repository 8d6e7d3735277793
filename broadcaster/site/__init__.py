"""The status site, in one place.

- `state`: what the site shows at a moment (open incidents, components, maintenance, months),
  read from the ledger, and the lookup's data;
- `files`: which pages, feeds and JSON an update touches, rendered per locale;
- `statuspage`: the Statuspage-compatible JSON (`api/v2/…`);
- `feeds`: the Atom feeds;
- `build`: `broadcaster site build`, the whole site rewritten from the ledger;
- `preview_server`: a local HTTP server to look at the files (the drill, the browser tests).

The website channel (channels/website.py) writes what `files` renders; the templates are in
templates/website.
"""
