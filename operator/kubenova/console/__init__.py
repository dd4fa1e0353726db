"""kubenova's serial console: the aggregated API server behind `virtualmachines/console` in
`subresources.kubenova.io` (`server`), and the pure pieces the server, the agents' console
endpoint and `kubectl vm console` share (`protocol`). docs/console.md has the design."""
