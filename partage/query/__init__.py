"""The query flow: every read of registry objects, for every door, through the one gate."""

from .service import QueryResult, QueryService

__all__ = ["QueryResult", "QueryService"]
