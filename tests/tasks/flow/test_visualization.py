"""Flow pictures on the Middlebury colour wheel, checked by hand."""

import numpy as np

from experiments.tasks.flow import visualization


def test_colour_wheel():
  flow = np.array([[[0.0, 0.0], [2.0, 0.0], [0.0, -2.0], [-2.0, 0.0]]])
  colour = visualization.flow_to_colour(flow)
  assert colour[0, 0].tolist() == [255, 255, 255]  # No motion: white.
  # Right: angle atan2(-0, -2) = -pi, the wheel's first hue, red.
  assert colour[0, 1].tolist() == [255, 0, 0]
  # Left: position 27 of 55 = cyan-blue i=2: (0, 255 - floor(255*2/11), 255).
  assert colour[0, 3].tolist() == [0, 255 - 46, 255]
  # Up (v < 0): position 40.5 of 55, between blue-magenta i=4 and i=5 (red
  # floor(255*4/13) = 78 and floor(255*5/13) = 98) -> (88, 0, 255).
  assert colour[0, 2].tolist() == [88, 0, 255]
  half = visualization.flow_to_colour(flow, max_radius=4.0)
  assert half[0, 1].tolist() == [255, 127, 127]  # Half way to white.
