"""nats"""
