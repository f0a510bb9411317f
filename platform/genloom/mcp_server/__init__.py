"""genloom's tools over the Model Context Protocol (the official `mcp` SDK): `genloom mcp` on stdio,
and /mcp (streamable HTTP) inside `genloom serve`.

Named mcp_server so it never shadows the SDK's own `mcp` package.
- tools.py: the tools, their JSON schemas (from the type hints) and the role each needs;
- http.py: the /mcp route, behind the API's key check.
"""
