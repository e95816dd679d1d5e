"""The web dashboard (`/ui`): static pages shipped in this package and a few page-only helpers.

``router`` serves the page and its assets (no CDN, no build step) and three helpers the page needs
beside the public API: who is signed in, a job's result rows as `w1 estimate` prints them, and one
event stream for many jobs. ``CrossSiteGuard`` refuses state-changing requests a browser marks as
coming from another site (the keyless local mode has no token to stop them)."""
from service.server.ui.guard import CrossSiteGuard
from service.server.ui.router import router

__all__ = ["CrossSiteGuard", "router"]
