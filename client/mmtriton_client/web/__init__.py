"""The web page: a Gradio front end for the `multimodal` ensemble (``mmtriton web``).

Importing this package turns Gradio's analytics off before Gradio is imported.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no usage reports, no calls out
