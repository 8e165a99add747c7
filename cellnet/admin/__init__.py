"""Admin side: connect with an admin startup kit and drive jobs (``cellnet job ...``)."""

from cellnet.admin._connect import admin_client
from cellnet.admin.job_cli import job_main

__all__ = ["admin_client", "job_main"]
