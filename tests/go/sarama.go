package main

func saramaScenarios() []scenario { return nil }
