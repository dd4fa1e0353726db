"""The kopf operator: informers into the scheduler cache, the scheduling loop, VM lifecycle,
status of pools and flavors, leader election. Thin glue over pure logic."""
