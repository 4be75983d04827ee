"""Pure decision logic: no asyncio, no sockets, no clocks of their own."""
