// Command kfake runs an in-memory franz-go kfake cluster for smoke-testing the
// client drivers when no real Kafka is available:
//
//	go run ./test/clients/kfake -port 9092 -partitions 3
//
// It serves until interrupted. kfake is a fake: a driver passing against it is
// not proof of anything about real Kafka, only that the driver works.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	port := flag.Int("port", 9092, "port of the first broker (others follow)")
	brokers := flag.Int("brokers", 1, "number of brokers")
	partitions := flag.Int("partitions", 3, "partitions of auto-created and seeded topics")
	topics := flag.String("topics", "", "comma-separated topics to create at start")
	flag.Parse()

	ports := make([]int, *brokers)
	for i := range ports {
		ports[i] = *port + i
	}
	opts := []kfake.Opt{
		kfake.Ports(ports...),
		kfake.NumBrokers(*brokers),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(*partitions),
	}
	if *topics != "" {
		opts = append(opts, kfake.SeedTopics(int32(*partitions), strings.Split(*topics, ",")...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfake:", err)
		os.Exit(1)
	}
	defer c.Close()
	fmt.Fprintln(os.Stderr, "kfake: listening on", strings.Join(c.ListenAddrs(), ","))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}
