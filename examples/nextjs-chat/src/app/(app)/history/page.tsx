import { History } from "@/components/History";

export default function HistoryPage() {
  return <History />;
}
