"""The HTTP edge (aiohttp): the only place HTTP is spoken, one module per resource."""
