"""The pure domain model: values and state machines, no asyncio, no I/O."""
