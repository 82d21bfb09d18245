"""The three components and their combination. ``base`` holds the contracts: calendar components (trend,
seasonality) and residual components (ridges, trees, the neural residual), each with its state as plain
numbers and arrays (torch stays inside the neural residual); ``hybrid`` composes them."""
