"""bastion.hw"""
