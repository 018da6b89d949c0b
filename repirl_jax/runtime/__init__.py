"""Devices and meshes: the backend's compute dtype, the sharding table, multi-host start-up."""
