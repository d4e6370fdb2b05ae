package proxy

// The one list of Kafka APIs kproxy serves. Each row names the API key, the
// versions kproxy accepts (before intersecting with the clusters'), where
// its requests go, which identities its handler rewrites, and the handler
// (in NN_name.go, named after the key). Registration (registry.go) and the
// ApiVersions answer (18_api_versions.go) come from this table only; a key
// not listed here is neither advertised nor served. apis_test.go checks
// that the table, the dispatcher, ApiVersions and each handler file's
// header agree. The rewrites column says what each handler translates
// today; the rules live in the ident_*.go files.

import "github.com/twmb/franz-go/pkg/kmsg"

var apiTable = []apiSpec{
	api(kmsg.Produce, 3, 13, toLeaders, rwProducerIDs|rwNodes|rwTopicIDs, handleProduce),
	api(kmsg.Fetch, 4, 18, toLeaders, rwOffsets|rwEpochs|rwNodes|rwTopicIDs, handleFetch),
	api(kmsg.ListOffsets, 1, 11, toLeaders, rwOffsets|rwEpochs, handleListOffsets),
	api(kmsg.Metadata, 0, 13, builtHere, rwNodes|rwTopicIDs|rwEpochs, handleMetadata),
	api(kmsg.OffsetCommit, 0, 9, splitAcrossClusters, rwEpochs, handleOffsetCommit), // the group's coordinator, split when topics live off its home
	api(kmsg.OffsetFetch, 0, 9, splitAcrossClusters, rwEpochs, handleOffsetFetch),   // likewise
	api(kmsg.FindCoordinator, 0, 6, builtHere, rwNodes, handleFindCoordinator),
	api(kmsg.JoinGroup, 0, 9, toCoordinator, 0, handleJoinGroup),
	api(kmsg.Heartbeat, 0, 4, toCoordinator, 0, handleHeartbeat),
	api(kmsg.LeaveGroup, 0, 5, toCoordinator, 0, handleLeaveGroup),
	api(kmsg.SyncGroup, 0, 5, toCoordinator, 0, handleSyncGroup),
	api(kmsg.DescribeGroups, 0, 6, toCoordinator, 0, handleDescribeGroups),
	api(kmsg.ListGroups, 0, 5, toEveryBroker, 0, handleListGroups),
	api(kmsg.SASLHandshake, 0, 1, answeredLocally, 0, handleSaslHandshake),
	api(kmsg.ApiVersions, 0, 4, answeredLocally, 0, handleApiVersions),
	api(kmsg.CreateTopics, 0, 7, splitAcrossClusters, rwTopicIDs, handleCreateTopics),
	api(kmsg.DeleteTopics, 0, 6, splitAcrossClusters, rwTopicIDs, handleDeleteTopics),
	api(kmsg.DeleteRecords, 0, 2, toLeaders, 0, handleDeleteRecords),
	api(kmsg.InitProducerID, 0, 5, builtHere, rwProducerIDs, handleInitProducerID),
	api(kmsg.OffsetForLeaderEpoch, 2, 2, toLeaders, rwEpochs, handleOffsetForLeaderEpoch),
	api(kmsg.AddPartitionsToTxn, 0, 3, toCoordinator, rwProducerIDs, answerLater(handleAddPartitionsToTxn)),
	api(kmsg.AddOffsetsToTxn, 0, 4, toCoordinator, rwProducerIDs, answerLater(handleAddOffsetsToTxn)),
	api(kmsg.EndTxn, 0, 5, toCoordinator, rwProducerIDs, answerLater(handleEndTxn)),
	api(kmsg.TxnOffsetCommit, 0, 5, toCoordinator, rwProducerIDs|rwEpochs, answerLater(handleTxnOffsetCommit)),
	api(kmsg.DescribeACLs, 0, 3, toAnyBroker, 0, handleDescribeACLs),
	api(kmsg.CreateACLs, 0, 3, toAnyBroker, 0, handleCreateACLs),
	api(kmsg.DeleteACLs, 0, 3, toAnyBroker, 0, handleDeleteACLs),
	api(kmsg.DescribeConfigs, 0, 4, splitAcrossClusters, rwNodes, handleDescribeConfigs),
	api(kmsg.AlterConfigs, 0, 2, splitAcrossClusters, 0, handleAlterConfigs),
	api(kmsg.SASLAuthenticate, 0, 2, answeredLocally, 0, handleSaslAuthenticate),
	api(kmsg.CreatePartitions, 0, 3, splitAcrossClusters, 0, handleCreatePartitions),
	api(kmsg.DeleteGroups, 0, 2, toCoordinator, 0, handleDeleteGroups),
	api(kmsg.ElectLeaders, 0, 2, toAnyBroker, 0, handleElectLeaders),
	api(kmsg.IncrementalAlterConfigs, 0, 1, splitAcrossClusters, 0, handleIncrementalAlterConfigs),
	api(kmsg.ListPartitionReassignments, 0, 0, toAnyBroker, 0, handleListPartitionReassignments),
	api(kmsg.OffsetDelete, 0, 0, toCoordinator, 0, handleOffsetDelete),
	api(kmsg.DescribeClientQuotas, 0, 1, toAnyBroker, 0, handleDescribeClientQuotas),
	api(kmsg.AlterClientQuotas, 0, 1, toAnyBroker, 0, handleAlterClientQuotas),
	api(kmsg.DescribeUserSCRAMCredentials, 0, 0, toAnyBroker, 0, handleDescribeUserSCRAMCredentials),
	api(kmsg.AlterUserSCRAMCredentials, 0, 0, toAnyBroker, 0, handleAlterUserSCRAMCredentials),
	api(kmsg.DescribeCluster, 0, 2, builtHere, rwNodes, handleDescribeCluster),
	api(kmsg.DescribeProducers, 0, 0, toLeaders, 0, handleDescribeProducers),
	api(kmsg.DescribeTransactions, 0, 0, toCoordinator, rwProducerIDs, handleDescribeTransactions),
	api(kmsg.ListTransactions, 0, 2, toEveryBroker, 0, handleListTransactions),
	api(kmsg.ConsumerGroupHeartbeat, 0, 1, toCoordinator, rwTopicIDs, handleConsumerGroupHeartbeat),
	api(kmsg.ConsumerGroupDescribe, 0, 1, toCoordinator, rwTopicIDs, handleConsumerGroupDescribe),
}
