"""The coordination broker's core: labels, signing, policy, intake, bus, gateway, dispatch, audit."""

__all__: list[str] = []
