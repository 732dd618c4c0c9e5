"""Federated learning: HE backends behind one interface, DeepProtect-style and FedAvg protocols, Flower apps."""
