"""How streamflow talks to a Kafka cluster, below every layer that uses one (the registry, the
engine, the clients): the settings (``settings``), librdkafka's own log (``client_log``) and
what a refusal by the cluster means (``refusals``)."""
