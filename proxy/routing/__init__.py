"""The routing component: which provider serves this request, and why."""
