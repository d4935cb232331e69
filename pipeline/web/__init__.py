"""The web app: clinics' pages, the reviewers' queue and the JSON API (``smp serve``).

See :mod:`pipeline.web.app` (``create_app``) and :mod:`pipeline.web.settings`.
"""

from pipeline.web.app import create_app
from pipeline.web.settings import ThrottleSettings, WebSettings

__all__ = ["ThrottleSettings", "WebSettings", "create_app"]
