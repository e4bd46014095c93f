"""The schedule model: when each slot of a job falls, as pure functions of time (intervals, wall times, cron,
windows, zones and daylight saving time)."""
