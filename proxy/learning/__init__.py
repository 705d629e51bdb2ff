"""The learning loop: samples -> store -> statistics -> the scoreboard routing reads."""
