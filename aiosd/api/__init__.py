"""The HTTP surface: the app, the completion routes, response and error bodies, request context, the OpenAPI text.

Request context means ids, body limits and disconnects. No scheduling or kernel I/O of its own.
"""
