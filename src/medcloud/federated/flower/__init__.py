"""The Flower ServerApp/ClientApp pair: strategies that aggregate ciphertext bytes in ArrayRecords."""
