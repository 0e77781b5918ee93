package main

func kafkaGoScenarios() []scenario { return nil }
