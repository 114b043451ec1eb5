"""Apps on the device: the app store on flash and the app manager that runs them.

Apps live under ``DEV/apps/<component_id>/<version>/`` with a ``current``
link per component, switched atomically (:mod:`bastion.os.apps.store`). The app
manager runs each installed app's entry point as a child process and restarts it
when it crashes (:mod:`bastion.os.apps.manager`). There is no sandbox yet: apps
run as plain child processes with a minimal environment; bubblewrap, Landlock
and seccomp come with the compartmentalization issue.
"""
