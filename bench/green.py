"""Imported first by every bench that talks to the services: eventlet's monkey patching, before anything
imports socket, threading or time (nameko and kombu need the green ones). The seeder does not import it:
its COPY runs on a real thread beside the Python building the rows."""

import eventlet

eventlet.monkey_patch()
