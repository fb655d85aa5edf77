"""Server-rendered pages: Jinja templates and our own small stylesheet (no framework on the client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

__all__ = ["STATIC_DIR", "TEMPLATE_DIR", "static_files", "template_config"]

HERE = Path(__file__).parent
TEMPLATE_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=TEMPLATE_DIR, engine=JinjaTemplateEngine)


def static_files() -> Any:
    return create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False)
