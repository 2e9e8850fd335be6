"""Robot trajectories for the world model: our folder format and DROID, LeRobot datasets, one interface over them, pose maths."""
