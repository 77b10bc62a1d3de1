"""The reliability campaign (``promptship reliability``): kill points, automatic recovery, soak."""
