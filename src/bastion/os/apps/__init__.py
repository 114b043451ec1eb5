"""Apps on the device: the app store on flash and the app manager that runs them.

Apps live under ``DEV/apps/<component_id>/<version>/`` with a ``current``
link per component, switched atomically (:mod:`bastion.os.apps.store`). The app
manager runs each installed app's entry point in its own sandbox
(:mod:`bastion.os.apps.launch`, :mod:`bastion.os.sandbox`) and restarts it when it
crashes (:mod:`bastion.os.apps.manager`).
"""
