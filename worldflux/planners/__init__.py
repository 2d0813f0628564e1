from worldflux.planners.cem import CEMPlanner

__all__ = ["CEMPlanner"]
