"""bastion.boot"""
