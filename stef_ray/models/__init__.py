"""The three components and their combination. Each: fit -> self, predict, ``to_state``/``from_state``
with plain numbers and arrays (torch stays inside the residual model)."""
