"""Operator tools around the fleet: the `kakarot` CLI, the demo, the hub, the simulator and the
process helpers. Nothing in the fleet imports them."""
