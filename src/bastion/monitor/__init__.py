"""bastion.monitor"""
