"""bastion.os"""
